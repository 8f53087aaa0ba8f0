"""The numerical core: schedules, the preconditioned denoiser, blankets, samplers, seeds, dates.

Nothing here knows about configs, stores or orchestration; errors are plain ``ValueError``s
that the config layer turns into one-line messages naming the key (the date and size parsers
take the key from their caller).
"""
