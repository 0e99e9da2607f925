"""Real-time risk control: rules, velocity features, models, decisions and cases."""
