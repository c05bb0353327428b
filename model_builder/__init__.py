"""Model builder: train the autoencoder and latent density on good parts, calibrate, report."""
