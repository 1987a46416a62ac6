"""Pure decisions: from workloads and policies, what each policy must do. No I/O, no clocks:
objects in, plans out."""
