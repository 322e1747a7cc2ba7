"""The measuring engine, split as optimum-benchmark splits it:

- :mod:`.models`      the backend: builds a model from a catalogue entry (torchvision, timm, the zoo)
- :mod:`.timing`      device-synchronised timers and the warm-up-then-measure loop
- :mod:`.memory`      memory probes per device class (NVML, unified memory, RSS)
- :mod:`.fingerprint` what the result was measured on
- :mod:`.scenario`    the paper's scenario: params, file size, FLOPs, then each batch size
"""
