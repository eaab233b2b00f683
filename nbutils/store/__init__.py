"""What the workbook keeps on disk: the run folder's paths (paths), atomic files and repo-relative
paths (files), what a stage committed (manifests), resumable work in shards (shards), stable ids
and seeds (ids)."""
