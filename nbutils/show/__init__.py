"""What a notebook shows: tables of stats (tables), saving a figure (figures). Each stage package
draws its own figures."""
