"""The measuring engine, one concern per module as optimum-benchmark splits its trackers:

- :mod:`.models`      the backend: builds a model from a catalogue entry (torchvision, timm, the zoo)
- :mod:`.runtimes`    what runs the model (eager, torch.compile, ONNX Runtime, OpenVINO): one module
                      each, one row each in :mod:`dnnprof.runtimes`
- :mod:`.device`      opens the device: dtype, threads, memory probe, floor, cap, timer
- :mod:`.flops`       FLOPs of one image, counted once, attention included, whatever the device
- :mod:`.timing`      device-synchronised timers, the warm-up, timed runs sized by count and time
- :mod:`.memory`      memory probes per device class (NVML, unified memory, RSS) and the memory cap
- :mod:`.energy`      energy per image over windows long enough for the counters
- :mod:`.host`        the measuring threads, and what else the host did while timing
- :mod:`.fingerprint` what the result was measured on
- :mod:`.accuracy`    top-1/top-5 on an ImageNet validation folder, with the model's own preprocessing
- :mod:`.scenario`    the paper's scenario in one measuring process: its steps, in order
- :mod:`.cells`       one batch size's timing protocol: first call, warm-up and memory, timed blocks

Across fresh processes the cells are combined by :mod:`workers.aggregate` (torch-free, beside
:mod:`workers.peaks` and :mod:`workers.phases`).
"""
