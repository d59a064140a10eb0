"""The shell's files and data: spec files, data reading and checks, run folders, saves. No torch."""
