"""Real-camera test infrastructure: GStreamer RTSP server, test media and their controller."""
