"""The landing area: tranches and their files, chunks of reading work, record readers
per format, and synthetic sample tranches. Plain Python, no Beam transforms."""
