"""Videos in and out: the output formats and what this machine can encode (formats.py), frames piped into ffmpeg
(writer.py), video files read back a chunk at a time (reader.py), and the frame order of a ping-pong (pingpong.py)."""
