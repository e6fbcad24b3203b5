"""Where convscope keeps what clients upload: models (files + records), images (Redis), datasets (disk)."""
