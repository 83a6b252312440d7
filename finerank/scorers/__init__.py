"""Everything that scores candidate lists: cross-encoder backends, the fused model, the cascade."""
