"""The networks: the Wan VAE's building blocks, encoder, decoder and precision rules, and the tiny TAEHV decoders.

Each module says what flows in and out; none knows about tiles, plans or files beyond its own weights."""
