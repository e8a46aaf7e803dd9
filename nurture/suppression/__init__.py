"""Suppression: the addresses that get nothing (unsubscribed, bounced, complained, erased,
suppressed by an operator), across every sequence, effective before the next send."""
