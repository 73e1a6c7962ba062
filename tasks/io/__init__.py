"""The one reader of user files (tasks.io.files), safe checkpoint loading, and the export cards."""
