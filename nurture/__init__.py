"""Nurture: lead-nurture automation engine."""
