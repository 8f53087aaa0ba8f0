"""Latent data: archives of encoded states, and the synthetic world whose statistics are exact."""
