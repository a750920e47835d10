"""The planner: tiles and the windows they run on, and the memory and work estimates that `tiling="auto"` chooses by."""
