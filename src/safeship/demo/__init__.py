"""The reference service that ``safeship demo`` runs: an orders API that uses safeship."""
