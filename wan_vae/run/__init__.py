"""The drivers: a plan run over a video, whole or streamed, on one device, several, or several processes
(decode.py, encode.py, multidevice.py, distributed.py), with the settings (options.py) and input checks (inputs.py)."""
