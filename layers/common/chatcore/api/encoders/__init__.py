"""Wire encoders: each turns the internal event stream into one protocol's bytes."""
