"""Local and total retention: a pure planner and the actuators that carry its plans out."""
