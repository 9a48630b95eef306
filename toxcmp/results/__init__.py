"""What a run writes: the typed, versioned schema (`schema`) and the atomic writer and readers (`io`)."""
