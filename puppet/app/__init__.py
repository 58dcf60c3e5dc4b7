"""The application: the live loop and offline rendering (live), demo, bench and doctor."""
