plugins {
  id("com.android.application")
  id("org.jetbrains.kotlin.android")
}

android {
  namespace = "org.editmobile.demo"
  compileSdk = 35

  defaultConfig {
    applicationId = "org.editmobile.demo"
    minSdk = 26 // java.nio / MessageDigest APIs the plain-Java logic uses; ExecuTorch needs 23
    targetSdk = 35
    versionCode = 1
    versionName = "0.1.0"
    ndk { abiFilters += listOf("arm64-v8a", "x86_64") } // the ABIs the ExecuTorch AAR ships
  }

  buildTypes {
    // The debug build is debuggable, which `adb shell run-as` needs to push the artifact.
    release { isMinifyEnabled = false }
  }

  compileOptions {
    sourceCompatibility = JavaVersion.VERSION_11
    targetCompatibility = JavaVersion.VERSION_11
  }
  kotlinOptions { jvmTarget = "11" }
}

dependencies {
  // Same release as the executorch Python package that wrote the .pte (manifest "tools").
  implementation("org.pytorch:executorch-android:1.5.1")
}
