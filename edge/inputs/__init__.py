"""Digital inputs: the enable switch and the wheel encoder, through gpiozero or Jetson.GPIO."""
