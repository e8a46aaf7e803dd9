"""A/B tests of drip content: the pure statistics that assign, watch and judge experiments."""
