"""Fast multi-view camera data path and the synthetic nuScenes dataset."""
