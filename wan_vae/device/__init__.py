"""What a device offers: the memory it has free (and handing freed memory back), and the precision that suits it.

Below the networks, which hand freed memory back between frames, and everything that plans or runs on a device."""
