"""Files in and out of the library, other than videos: VAE checkpoints (what a file is, its key names, its config),
latent files, and the partial names a file is written under until it is complete."""
