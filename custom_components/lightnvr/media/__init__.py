"""Media building blocks shared by the recorder, event clips and live HLS.

`fmp4` is the one fragmented-MP4 writer (into a file or into memory); `bmff` the one box walker
(files, buffers, streams being written) with the tfdt patching playlists need.
"""
