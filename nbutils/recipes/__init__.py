"""06 (after the runs): recipes side by side, from the runs they made."""
