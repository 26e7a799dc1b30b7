package org.editmobile.demo;

/** A problem with the artifact or the device, stated in one line with what to do about it. */
public final class DemoException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  public DemoException(String message) {
    super(message);
  }
}
