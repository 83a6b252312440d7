"""In-process integrations: finerank's scorers inside the pipelines people compose in Python (PyTerrier, LangChain)."""
