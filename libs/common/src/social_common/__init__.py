"""Shared platform code of the social fleet."""
