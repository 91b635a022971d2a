"""The read side: records through TensorBoard's data provider, as arrays and filter tables."""
