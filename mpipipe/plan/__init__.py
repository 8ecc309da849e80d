"""What runs without MPI or a model: the simulator, the timeline, the partitioners."""
