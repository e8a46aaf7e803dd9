"""Leads: the validated shape of an incoming lead and the CSV importer."""
