"""lifeloop: a customer lifecycle platform for brands' own channels."""

__version__ = "0.1.0"
