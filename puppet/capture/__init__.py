"""Stage 1, capture: camera, video-file and pose-track sources of frames."""
