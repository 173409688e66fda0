"""Output: what a tracked frame becomes.

``render`` draws masks, ids and the HUD on a frame (the window and the video
sink share it); ``sinks`` writes annotated video, JSONL with RLE masks
(``rle``), DAVIS-style indexed PNGs and MOTS text. ``polygons`` and
``labels`` turn masks into YOLO segmentation labels and COCO JSON for
``realtime-sam annotate``.
"""
