"""The measuring engine, one concern per module as optimum-benchmark splits its trackers:

- :mod:`.models`      the backend: builds a model from a catalogue entry (torchvision, timm, the zoo)
- :mod:`.flops`       FLOPs of one image, counted once, attention included, whatever the device
- :mod:`.timing`      device-synchronised timers, the warm-up, timed runs sized by count and time
- :mod:`.memory`      memory probes per device class (NVML, unified memory, RSS) and the memory cap
- :mod:`.energy`      energy per image over windows long enough for the counters
- :mod:`.host`        the measuring threads, and what else the host did while timing
- :mod:`.fingerprint` what the result was measured on
- :mod:`.scenario`    the paper's scenario in one measuring process: static figures, then each batch

Across fresh processes the cells are combined by :mod:`workers.aggregate` (torch-free).
"""
