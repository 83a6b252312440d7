"""What everything shares: errors, records, text normalisation, metrics, the environment. No model, no file writes."""
