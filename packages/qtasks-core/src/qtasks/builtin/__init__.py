"""Built-in plugins. Each registers through the public hooks exactly as an add-on does."""
