"""wsol-jax: Learning a Weight Map for Weakly-Supervised Localization (Shaharabany & Wolf), in JAX."""
