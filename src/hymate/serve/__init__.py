"""Serving: score stays with a saved checkpoint of any task and model."""
