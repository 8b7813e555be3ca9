"""harness: does sharpness-aware training make Segment Anything more robust?"""

__version__ = "0.1.0"
