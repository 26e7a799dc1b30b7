package org.editmobile.demo;

import java.util.List;

/**
 * Runs one method of a pipeline program: on a phone ExecuTorch's Module (ExecuTorchRunner); in
 * the JVM check a replay of the calls the Python runtime made (no ExecuTorch on the JVM here).
 */
public interface MethodRunner {
  List<HostTensor> run(String method, List<HostTensor> inputs);
}
