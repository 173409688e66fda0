"""Capture: where frames come from.

:func:`~realtime_sam.capture.open_source` turns a ``--source`` value (camera
index, file, image folder, RTSP/HTTP URL) into a :class:`Source` whose
``frames()`` yields :class:`~realtime_sam.types.Frame` objects. The pipeline
runs it on its capture thread.
"""
