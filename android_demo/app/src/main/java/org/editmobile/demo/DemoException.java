package org.editmobile.demo;

/** A problem with the artifact or the device, stated in one line with what to do about it. */
public final class DemoException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  public DemoException(String message) {
    super(message);
  }

  /**
   * The one line shown for anything an entry point caught. A DemoException says what to do; the
   * rest should not happen (the readers refuse hostile files first) but must not crash the app.
   */
  public static String describe(Throwable err) {
    if (err instanceof DemoException) {
      return err.getMessage();
    }
    if (err instanceof StackOverflowError) {
      return "the artifact is nested too deeply to read (StackOverflowError); re-export it";
    }
    if (err instanceof OutOfMemoryError) {
      return "the artifact does not fit in this device's memory (OutOfMemoryError)";
    }
    return "unexpected " + err.getClass().getName() + ": " + err.getMessage()
        + "; please report it with the artifact";
  }
}
