"""Videos out: the output formats and what this machine can encode (formats.py), and frames piped into ffmpeg (writer.py)."""
