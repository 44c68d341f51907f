"""Caption sources for the standard benchmarks, each read from its published format.

- karpathy.load_karpathy: Karpathy split JSON (COCO 5k/1k, Flickr30k); karpathy_folds: COCO 1k folds
- multi30k.load_multi30k: Multi30k task 1 (en/de/fr/cs translations) and task 2 (5 en/de captions)
- xtd.load_xtd: XTD10, 1000 COCO images with one caption in each of 11 languages
- crossmodal3600.load_crossmodal3600: Crossmodal-3600 captions.jsonl, 3600 images in 36 languages

Every loader returns CaptionRecords (by split where the dataset has splits), takes
`bad: BadRecords | None` (None: strict) and names the file and the record of each broken input.
"""
