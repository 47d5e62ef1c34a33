"""The browser pages."""
