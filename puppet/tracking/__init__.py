"""Stage 2, tracking: mediapipe face landmarks, blendshapes and head pose (FaceObservation)."""
