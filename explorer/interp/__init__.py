"""Interpretability machinery for the methods (CWAC first): scoped hooks that always come off,
a TopK sparse autoencoder, and input covariances with their small-eigenvalue projectors.

Training side only (torch); the viewing side never imports this package."""
