"""Thin routers: parse, call the registry or serving layer, answer."""
